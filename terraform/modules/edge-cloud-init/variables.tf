variable "region" {
  description = "The region's join settings: the `join` output of the region module (region, latitude, longitude, control_url, topic)."
  type = object({
    region      = string
    latitude    = number
    longitude   = number
    control_url = string
    topic       = string
  })
}

variable "roles" {
  description = "Which rim processes the machine runs: \"edge\", \"job\" or both."
  type        = set(string)
  default     = ["edge", "job"]

  validation {
    condition     = length(var.roles) > 0 && alltrue([for role in var.roles : contains(["edge", "job"], role)])
    error_message = "roles must name edge, job or both."
  }
}

variable "rim_url" {
  description = "Where the machine downloads the `rim` binary (a release artifact for the machine's architecture)."
  type        = string

  validation {
    condition     = can(regex("^https?://", var.rim_url))
    error_message = "rim_url must be an http:// or https:// URL."
  }
}

variable "rim_sha256" {
  description = "SHA-256 of the binary at rim_url, checked before it is installed."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.rim_sha256))
    error_message = "rim_sha256 must be 64 lowercase hex digits."
  }
}

variable "cluster_secret" {
  description = "The cluster secret shared by control, edges and job workers (RIM_CLUSTER_SECRET)."
  type        = string
  sensitive   = true
}

variable "job_database_url" {
  description = "PostgreSQL URL of rim's store, where job workers find the region's edges (RIM_JOB_DATABASE_URL). Required when roles include job."
  type        = string
  default     = ""
  sensitive   = true
}

variable "kafka_brokers" {
  description = "Kafka bootstrap servers of the job workers (RIM_JOB_KAFKA_BROKERS)."
  type        = string
  default     = "127.0.0.1:9092"
}

variable "topic_prefix" {
  description = "Prefix of the region topics (RIM_JOB_TOPIC_PREFIX), as on rim control."
  type        = string
  default     = "rim-push-"
}

variable "public_hostname" {
  description = "Host name web clients are given for this machine's edge (RIM_EDGE_PUBLIC_HOSTNAME); empty: rim's default."
  type        = string
  default     = ""
}

variable "public_address_command" {
  description = "Shell command run at boot whose output is the edge's public address (RIM_EDGE_PUBLIC_ADDRESSES), e.g. a cloud metadata query; empty: none."
  type        = string
  default     = ""
}

variable "private_address_command" {
  description = "Shell command run at boot whose output is the machine's private address; job workers push to http://<it>:3109 (RIM_EDGE_PUSH_URL). Empty: rim's default."
  type        = string
  default     = ""
}

variable "extra_edge_environment" {
  description = "More RIM_* settings for `rim edge` (see `rim edge --help`), e.g. TLS certificate paths."
  type        = map(string)
  default     = {}
}

variable "extra_job_environment" {
  description = "More RIM_* settings for `rim job` (see `rim job --help`), e.g. RIM_JOB_KAFKA_OPTIONS for SASL."
  type        = map(string)
  default     = {}
}
