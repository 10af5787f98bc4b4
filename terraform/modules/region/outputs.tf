output "name" {
  description = "The region's name."
  value       = rim_region.this.name
}

output "topic" {
  description = "The region's Kafka topic."
  value       = local.topic
}

output "join" {
  description = "What an edge or job worker needs to join the region (the cluster secret and database URL are not part of it: they come from the operator)."
  value = {
    region      = rim_region.this.name
    latitude    = var.latitude
    longitude   = var.longitude
    control_url = var.control_url
    topic       = local.topic
  }
}

output "edge_environment" {
  description = "Environment of the region's `rim edge` processes (see edge-cloud-init)."
  value       = local.edge_environment
}

output "job_environment" {
  description = "Environment of the region's `rim job` processes (see edge-cloud-init)."
  value       = local.job_environment
}

output "api_key_ids" {
  description = "Ids of the services' API keys, by service."
  value       = { for service, key in rim_api_key.service : service => key.id }
}

output "api_keys" {
  description = "Secrets of the services' API keys, by service (known to the run that created them)."
  value       = { for service, key in rim_api_key.service : service => key.secret }
  sensitive   = true
}
