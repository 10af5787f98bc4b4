variable "region" {
  description = "The region's join settings: the `join` output of the region module."
  type = object({
    region      = string
    latitude    = number
    longitude   = number
    control_url = string
    topic       = string
  })
}

variable "vpc_id" {
  description = "VPC of the region's machines and load balancer."
  type        = string
}

variable "subnet_ids" {
  description = "Public subnets (at least two, in different availability zones) for the load balancer and the edges; machines are spread over them."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "Give at least two subnets in different availability zones."
  }
}

variable "ami_id" {
  description = "Machine image with cloud-init and systemd (e.g. Debian 12 or Ubuntu 24.04) for the region's machines."
  type        = string
}

variable "edge_instance_type" {
  description = "Instance type of the edges (connections are memory- and network-bound)."
  type        = string
  default     = "c7i.large"
}

variable "job_instance_type" {
  description = "Instance type of the job workers."
  type        = string
  default     = "t3.small"
}

variable "edge_count" {
  description = "Number of edge machines."
  type        = number
  default     = 2

  validation {
    condition     = var.edge_count >= 1
    error_message = "A region needs at least one edge."
  }
}

variable "job_count" {
  description = "Number of job worker machines (at most the topic's partition count do work)."
  type        = number
  default     = 1

  validation {
    condition     = var.job_count >= 1
    error_message = "A region needs at least one job worker."
  }
}

variable "client_cidrs" {
  description = "IPv4 ranges clients connect from (ports 3101-3103)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "rim_url" {
  description = "Where machines download the `rim` binary."
  type        = string
}

variable "rim_sha256" {
  description = "SHA-256 of the binary at rim_url."
  type        = string
}

variable "cluster_secret" {
  description = "The cluster secret (RIM_CLUSTER_SECRET)."
  type        = string
  sensitive   = true
}

variable "job_database_url" {
  description = "PostgreSQL URL of rim's store for the job workers (RIM_JOB_DATABASE_URL)."
  type        = string
  sensitive   = true
}

variable "kafka_brokers" {
  description = "Kafka bootstrap servers of the job workers."
  type        = string
}

variable "key_name" {
  description = "EC2 key pair for SSH access; null: none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
