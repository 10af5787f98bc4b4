# One rim region on AWS: edge machines behind a network load balancer (TCP 3101, WebSocket 3102,
# WebSocket over TLS 3103), job worker machines, and their security groups. The machines are set
# up by cloud-init from the edge-cloud-init module.

locals {
  name = "rim-${var.region.region}"
  client_ports = {
    tcp = 3101
    ws  = 3102
    wss = 3103
  }
  # IMDSv2 (required below): a session token first, then the address.
  imds = "TOKEN=$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60'); curl -sf -H \"X-aws-ec2-metadata-token: $TOKEN\" http://169.254.169.254/latest/meta-data"
  tags = merge(var.tags, { "rim:region" = var.region.region })
}

module "edge_init" {
  source = "../edge-cloud-init"

  region                  = var.region
  roles                   = ["edge"]
  rim_url                 = var.rim_url
  rim_sha256              = var.rim_sha256
  cluster_secret          = var.cluster_secret
  public_hostname         = aws_lb.edge.dns_name
  public_address_command  = "${local.imds}/public-ipv4"
  private_address_command = "${local.imds}/local-ipv4"
}

module "job_init" {
  source = "../edge-cloud-init"

  region           = var.region
  roles            = ["job"]
  rim_url          = var.rim_url
  rim_sha256       = var.rim_sha256
  cluster_secret   = var.cluster_secret
  job_database_url = var.job_database_url
  kafka_brokers    = var.kafka_brokers
}

# --- security groups ---------------------------------------------------------------------------

resource "aws_security_group" "lb" {
  name        = "${local.name}-lb"
  description = "rim ${var.region.region}: load balancer in front of the edges"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_security_group" "edge" {
  name        = "${local.name}-edge"
  description = "rim ${var.region.region}: edges"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_security_group" "job" {
  name        = "${local.name}-job"
  description = "rim ${var.region.region}: job workers"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

# Clients reach the load balancer, and the edges directly (HTTPDNS hands out edge addresses).
resource "aws_vpc_security_group_ingress_rule" "lb_clients" {
  for_each = { for pair in setproduct(keys(local.client_ports), var.client_cidrs) : "${pair[0]}-${pair[1]}" => pair }

  security_group_id = aws_security_group.lb.id
  description       = "rim clients (${each.value[0]})"
  cidr_ipv4         = each.value[1]
  ip_protocol       = "tcp"
  from_port         = local.client_ports[each.value[0]]
  to_port           = local.client_ports[each.value[0]]
}

resource "aws_vpc_security_group_ingress_rule" "edge_clients" {
  for_each = { for pair in setproduct(keys(local.client_ports), var.client_cidrs) : "${pair[0]}-${pair[1]}" => pair }

  security_group_id = aws_security_group.edge.id
  description       = "rim clients (${each.value[0]})"
  cidr_ipv4         = each.value[1]
  ip_protocol       = "tcp"
  from_port         = local.client_ports[each.value[0]]
  to_port           = local.client_ports[each.value[0]]
}

resource "aws_vpc_security_group_ingress_rule" "edge_from_lb" {
  for_each = merge(local.client_ports, { health = 3109 })

  security_group_id            = aws_security_group.edge.id
  description                  = "load balancer to edges (${each.key})"
  referenced_security_group_id = aws_security_group.lb.id
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
}

# Job workers push to the edges' internal endpoint.
resource "aws_vpc_security_group_ingress_rule" "edge_from_jobs" {
  security_group_id            = aws_security_group.edge.id
  description                  = "job workers push to edges (internal API)"
  referenced_security_group_id = aws_security_group.job.id
  ip_protocol                  = "tcp"
  from_port                    = 3109
  to_port                      = 3109
}

resource "aws_vpc_security_group_egress_rule" "all" {
  for_each = {
    lb   = aws_security_group.lb.id
    edge = aws_security_group.edge.id
    job  = aws_security_group.job.id
  }

  security_group_id = each.value
  description       = "outbound (control plane, Kafka, PostgreSQL, edges, package mirrors)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}

# --- load balancer -----------------------------------------------------------------------------

resource "aws_lb" "edge" {
  name                             = substr("${local.name}-edge", 0, 32)
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = var.subnet_ids
  security_groups                  = [aws_security_group.lb.id]
  enable_cross_zone_load_balancing = true
  tags                             = local.tags
}

resource "aws_lb_target_group" "edge" {
  for_each = local.client_ports

  name        = substr("${local.name}-${each.key}", 0, 32)
  port        = each.value
  protocol    = "TCP"
  target_type = "instance"
  vpc_id      = var.vpc_id
  # Long-lived connections: a deregistered (draining) edge keeps its connections until they end.
  deregistration_delay   = 300
  connection_termination = false
  preserve_client_ip     = true

  # The edge's /healthz answers 503 once it shuts down (and drains), so the balancer sends it no
  # new clients while its connections finish.
  health_check {
    protocol            = "HTTP"
    port                = "3109"
    path                = "/healthz"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = local.tags
}

resource "aws_lb_listener" "edge" {
  for_each = local.client_ports

  load_balancer_arn = aws_lb.edge.arn
  port              = each.value
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.edge[each.key].arn
  }

  tags = local.tags
}

resource "aws_lb_target_group_attachment" "edge" {
  for_each = { for pair in setproduct(keys(local.client_ports), range(var.edge_count)) : "${pair[0]}-${pair[1]}" => pair }

  target_group_arn = aws_lb_target_group.edge[each.value[0]].arn
  target_id        = aws_instance.edge[each.value[1]].id
  port             = local.client_ports[each.value[0]]
}

# --- machines ----------------------------------------------------------------------------------

resource "aws_instance" "edge" {
  count = var.edge_count

  ami                         = var.ami_id
  instance_type               = var.edge_instance_type
  subnet_id                   = element(var.subnet_ids, count.index)
  vpc_security_group_ids      = [aws_security_group.edge.id]
  associate_public_ip_address = true
  key_name                    = var.key_name
  user_data                   = module.edge_init.user_data
  user_data_replace_on_change = true

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  tags = merge(local.tags, { Name = "${local.name}-edge-${count.index}", "rim:role" = "edge" })
}

resource "aws_instance" "job" {
  count = var.job_count

  ami                         = var.ami_id
  instance_type               = var.job_instance_type
  subnet_id                   = element(var.subnet_ids, count.index)
  vpc_security_group_ids      = [aws_security_group.job.id]
  associate_public_ip_address = true
  key_name                    = var.key_name
  user_data                   = module.job_init.user_data
  user_data_replace_on_change = true

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  tags = merge(local.tags, { Name = "${local.name}-job-${count.index}", "rim:role" = "job" })
}
