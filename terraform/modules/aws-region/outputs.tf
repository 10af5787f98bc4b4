output "load_balancer_dns_name" {
  description = "DNS name of the network load balancer in front of the edges (ports 3101-3103)."
  value       = aws_lb.edge.dns_name
}

output "edge_instance_ids" {
  description = "Instance ids of the edges (their node ids are their host names)."
  value       = aws_instance.edge[*].id
}

output "edge_public_ips" {
  description = "Public addresses of the edges."
  value       = aws_instance.edge[*].public_ip
}

output "job_instance_ids" {
  description = "Instance ids of the job workers."
  value       = aws_instance.job[*].id
}

output "security_group_ids" {
  description = "Security groups of the load balancer, the edges and the job workers."
  value = {
    lb   = aws_security_group.lb.id
    edge = aws_security_group.edge.id
    job  = aws_security_group.job.id
  }
}
