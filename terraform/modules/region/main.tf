# A rim region: its control-plane record (created with its Kafka topic), API keys for the services
# that push to it, and the settings its edges and job workers start with.

resource "rim_region" "this" {
  name      = var.name
  latitude  = var.latitude
  longitude = var.longitude
}

resource "rim_api_key" "service" {
  for_each = var.services

  name            = "${rim_region.this.name}-${each.key}"
  scopes          = each.value.scopes
  target_kinds    = each.value.target_kinds
  rate_per_second = each.value.rate_per_second
  rate_burst      = each.value.rate_burst
}

locals {
  # The control plane names the topic when its bus has topics (Kafka); otherwise it follows the prefix.
  topic = coalesce(rim_region.this.topic, "${var.topic_prefix}${rim_region.this.name}")

  edge_environment = tomap({
    RIM_EDGE_REGION      = rim_region.this.name
    RIM_EDGE_LATITUDE    = tostring(var.latitude)
    RIM_EDGE_LONGITUDE   = tostring(var.longitude)
    RIM_EDGE_CONTROL_URL = var.control_url
  })

  job_environment = tomap({
    RIM_JOB_REGION        = rim_region.this.name
    RIM_JOB_CONTROL_URL   = var.control_url
    RIM_JOB_KAFKA_BROKERS = var.kafka_brokers
    RIM_JOB_TOPIC_PREFIX  = var.topic_prefix
  })
}
