# Three rim regions end to end: Beijing, Frankfurt and US West. Each gets its control-plane record
# and Kafka topic (rim provider), an API key for the business backend, and edge and job machines
# behind a network load balancer (AWS).

locals {
  regions = {
    bj  = { latitude = 39.9042, longitude = 116.4074 }  # Beijing
    fra = { latitude = 50.1109, longitude = 8.6821 }    # Frankfurt
    usw = { latitude = 37.3382, longitude = -121.8863 } # US West (San Jose)
  }
}

module "region" {
  source   = "../../modules/region"
  for_each = local.regions

  name          = each.key
  latitude      = each.value.latitude
  longitude     = each.value.longitude
  control_url   = var.control_url
  kafka_brokers = var.kafka_brokers[each.key]
  services = {
    backend = {
      scopes          = ["push", "read"]
      rate_per_second = 2000
    }
  }
}

module "beijing" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.beijing }

  region           = module.region["bj"].join
  vpc_id           = var.networks["bj"].vpc_id
  subnet_ids       = var.networks["bj"].subnet_ids
  ami_id           = var.networks["bj"].ami_id
  rim_url          = var.rim_url
  rim_sha256       = var.rim_sha256
  cluster_secret   = var.cluster_secret
  job_database_url = var.job_database_url
  kafka_brokers    = var.kafka_brokers["bj"]
}

module "frankfurt" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.frankfurt }

  region           = module.region["fra"].join
  vpc_id           = var.networks["fra"].vpc_id
  subnet_ids       = var.networks["fra"].subnet_ids
  ami_id           = var.networks["fra"].ami_id
  rim_url          = var.rim_url
  rim_sha256       = var.rim_sha256
  cluster_secret   = var.cluster_secret
  job_database_url = var.job_database_url
  kafka_brokers    = var.kafka_brokers["fra"]
}

module "us_west" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.us_west }

  region           = module.region["usw"].join
  vpc_id           = var.networks["usw"].vpc_id
  subnet_ids       = var.networks["usw"].subnet_ids
  ami_id           = var.networks["usw"].ami_id
  rim_url          = var.rim_url
  rim_sha256       = var.rim_sha256
  cluster_secret   = var.cluster_secret
  job_database_url = var.job_database_url
  kafka_brokers    = var.kafka_brokers["usw"]
}

# After the machines are up: what a client in each city is told by HTTPDNS.
data "rim_dns" "city" {
  for_each = local.regions

  latitude   = each.value.latitude
  longitude  = each.value.longitude
  depends_on = [module.beijing, module.frankfurt, module.us_west]
}
