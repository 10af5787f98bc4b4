# Runs against the rim control plane named by RIM_ENDPOINT / RIM_ADMIN_KEY (the provider test
# terraform/provider/tests/terraform.rs starts one on PostgreSQL and runs this file).

provider "rim" {}

variables {
  name        = "tftest-bj"
  latitude    = 39.9042
  longitude   = 116.4074
  control_url = "https://rim-control.example.com:3111"
  services = {
    notify = {
      scopes          = ["push"]
      target_kinds    = ["mids", "keys"]
      rate_per_second = 50
    }
    ops = {
      scopes = ["read"]
    }
  }
}

run "creates_the_region_its_keys_and_settings" {
  command = apply

  assert {
    condition     = rim_region.this.name == "tftest-bj" && rim_region.this.latitude == 39.9042
    error_message = "the region was not created as configured"
  }

  assert {
    condition     = output.topic == "rim-push-tftest-bj"
    error_message = "unexpected topic ${output.topic}"
  }

  assert {
    condition     = rim_api_key.service["notify"].name == "tftest-bj-notify" && length(rim_api_key.service["notify"].id) > 4
    error_message = "the notify key was not created"
  }

  assert {
    condition     = length(nonsensitive(output.api_keys["ops"])) > 16
    error_message = "the ops key has no secret"
  }

  assert {
    condition = output.edge_environment == tomap({
      RIM_EDGE_REGION      = "tftest-bj"
      RIM_EDGE_LATITUDE    = "39.9042"
      RIM_EDGE_LONGITUDE   = "116.4074"
      RIM_EDGE_CONTROL_URL = "https://rim-control.example.com:3111"
    })
    error_message = "unexpected edge environment"
  }

  assert {
    condition     = output.job_environment["RIM_JOB_REGION"] == "tftest-bj" && output.job_environment["RIM_JOB_CONTROL_URL"] == "https://rim-control.example.com:3111"
    error_message = "unexpected job environment"
  }
}

run "moves_the_region_in_place" {
  command = apply

  variables {
    latitude = 40
  }

  assert {
    condition     = rim_region.this.latitude == 40 && output.join.latitude == 40
    error_message = "the region was not moved"
  }
}

run "rejects_a_centre_off_the_globe" {
  command = plan

  variables {
    latitude = 120
  }

  expect_failures = [var.latitude]
}

run "rejects_an_unknown_scope" {
  command = plan

  variables {
    services = {
      bad = {
        scopes = ["root"]
      }
    }
  }

  expect_failures = [var.services]
}
