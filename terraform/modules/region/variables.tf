variable "name" {
  description = "Region name, unique in the cluster (e.g. \"bj\"). Edges and job workers of the region run with it; the region's Kafka topic is named after it."
  type        = string

  validation {
    condition     = length(var.name) > 0 && length(var.name) <= 128
    error_message = "The region name must be 1 to 128 characters."
  }
}

variable "latitude" {
  description = "Latitude of the region's centre in degrees (-90 to 90): where HTTPDNS places the region for clients it cannot locate otherwise."
  type        = number

  validation {
    condition     = var.latitude >= -90 && var.latitude <= 90
    error_message = "The latitude must be between -90 and 90 degrees."
  }
}

variable "longitude" {
  description = "Longitude of the region's centre in degrees (-180 to 180)."
  type        = number

  validation {
    condition     = var.longitude >= -180 && var.longitude <= 180
    error_message = "The longitude must be between -180 and 180 degrees."
  }
}

variable "control_url" {
  description = "Base URL at which the region's edges and job workers reach rim control (RIM_EDGE_CONTROL_URL, RIM_JOB_CONTROL_URL: the edge API, and enrollment for node tokens), e.g. \"https://rim-control.internal:3111\"."
  type        = string

  validation {
    condition     = can(regex("^https?://", var.control_url))
    error_message = "control_url must start with http:// or https://."
  }
}

variable "kafka_brokers" {
  description = "Kafka bootstrap servers (host:port,...) of the region's job workers (RIM_JOB_KAFKA_BROKERS)."
  type        = string
  default     = "127.0.0.1:9092"
}

variable "topic_prefix" {
  description = "Prefix of the region topics, as configured on rim control (RIM_JOB_TOPIC_PREFIX); used when the control plane's bus does not name the topic."
  type        = string
  default     = "rim-push-"
}

variable "services" {
  description = "API keys to create for the region's business services, by service name: scopes (push, read, admin) and optional push limits. Key names are \"<region>-<service>\"."
  type = map(object({
    scopes          = list(string)
    target_kinds    = optional(list(string))
    rate_per_second = optional(number)
    rate_burst      = optional(number)
  }))
  default = {}

  validation {
    condition = alltrue([
      for service in values(var.services) : length(service.scopes) > 0 && alltrue([
        for scope in service.scopes : contains(["push", "read", "admin"], scope)
      ])
    ])
    error_message = "Each service needs at least one scope, and scopes may only be push, read or admin."
  }
}
