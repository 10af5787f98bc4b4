output "topics" {
  description = "Kafka topic of each region."
  value       = { for name, region in module.region : name => region.topic }
}

output "load_balancers" {
  description = "DNS name of each region's edge load balancer."
  value = {
    bj  = module.beijing.load_balancer_dns_name
    fra = module.frankfurt.load_balancer_dns_name
    usw = module.us_west.load_balancer_dns_name
  }
}

output "backend_keys" {
  description = "The backend's API key of each region (shown once: store them in your secret manager)."
  value       = { for name, region in module.region : name => region.api_keys["backend"] }
  sensitive   = true
}

output "httpdns" {
  description = "The edges HTTPDNS gives a client in each city, best first."
  value       = { for name, answer in data.rim_dns.city : name => answer.nodes }
}
