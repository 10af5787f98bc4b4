terraform {
  required_version = ">= 1.6"

  required_providers {
    rim = {
      source = "rim/rim"
    }
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.30"
    }
  }
}

# rim control's admin API: set RIM_ENDPOINT and RIM_ADMIN_KEY, or the two variables below.
provider "rim" {
  endpoint  = var.rim_endpoint
  admin_key = var.rim_admin_key
}

# One AWS provider per region the machines run in.
provider "aws" {
  alias  = "beijing"
  region = "cn-north-1"
}

provider "aws" {
  alias  = "frankfurt"
  region = "eu-central-1"
}

provider "aws" {
  alias  = "us_west"
  region = "us-west-2"
}
