variable "rim_endpoint" {
  description = "rim control's base URL for the admin API; null: RIM_ENDPOINT."
  type        = string
  default     = null
}

variable "rim_admin_key" {
  description = "An admin key of rim control; null: RIM_ADMIN_KEY."
  type        = string
  default     = null
  sensitive   = true
}

variable "control_url" {
  description = "URL at which edges reach rim control's edge API."
  type        = string
}

variable "kafka_brokers" {
  description = "Kafka bootstrap servers of each region's job workers, by region name (bj, fra, usw)."
  type        = map(string)
}

variable "job_database_url" {
  description = "PostgreSQL URL of rim's store for the job workers."
  type        = string
  sensitive   = true
}

variable "cluster_secret" {
  description = "The cluster secret shared by control, edges and job workers."
  type        = string
  sensitive   = true
}

variable "rim_url" {
  description = "Where machines download the rim binary (x86_64 Linux)."
  type        = string
}

variable "rim_sha256" {
  description = "SHA-256 of the binary at rim_url."
  type        = string
}

variable "networks" {
  description = "Per region (bj, fra, usw): VPC, public subnets and machine image."
  type = map(object({
    vpc_id     = string
    subnet_ids = list(string)
    ami_id     = string
  }))

  validation {
    condition     = alltrue([for name in ["bj", "fra", "usw"] : contains(keys(var.networks), name)])
    error_message = "networks needs entries for bj, fra and usw."
  }
}
