output "user_data" {
  description = "The cloud-init user data (#cloud-config) that installs rim and starts its services."
  value       = "#cloud-config\n${yamlencode(local.cloud_config)}"
  sensitive   = true
}

output "edge_environment" {
  description = "The non-secret environment of `rim edge` (empty when the machine runs no edge)."
  value       = local.run_edge ? local.edge_environment : {}
}

output "job_environment" {
  description = "The non-secret environment of `rim job` (empty when the machine runs no job worker)."
  value       = local.run_job ? local.job_environment : {}
}

output "systemd_units" {
  description = "The systemd units, by file name."
  value       = local.units
}
