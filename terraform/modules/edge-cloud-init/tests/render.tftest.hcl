# Offline: renders the cloud-init configuration and checks what a machine would be given.

variables {
  region = {
    region      = "fra"
    latitude    = 50.1109
    longitude   = 8.6821
    control_url = "https://rim-control.internal:3111"
    topic       = "rim-push-fra"
  }
  rim_url                 = "https://releases.example.com/rim-x86_64-linux"
  rim_sha256              = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  cluster_secret          = "s3cret"
  job_database_url        = "postgres://rim@db.internal/rim"
  kafka_brokers           = "kafka-1:9092,kafka-2:9092"
  public_hostname         = "fra-edge.example.com"
  public_address_command  = "curl -s http://169.254.169.254/latest/meta-data/public-ipv4"
  private_address_command = "hostname -I | cut -d' ' -f1"
}

run "edge_and_job" {
  command = plan

  assert {
    condition     = startswith(output.user_data, "#cloud-config\n")
    error_message = "user data must start with #cloud-config"
  }

  assert {
    condition = output.edge_environment == tomap({
      RIM_EDGE_REGION          = "fra"
      RIM_EDGE_LATITUDE        = "50.1109"
      RIM_EDGE_LONGITUDE       = "8.6821"
      RIM_EDGE_CONTROL_URL     = "https://rim-control.internal:3111"
      RIM_EDGE_PUBLIC_HOSTNAME = "fra-edge.example.com"
      RIM_LOG_FORMAT           = "json"
    })
    error_message = "unexpected edge environment"
  }

  assert {
    condition     = output.job_environment["RIM_JOB_REGION"] == "fra" && output.job_environment["RIM_JOB_KAFKA_BROKERS"] == "kafka-1:9092,kafka-2:9092" && output.job_environment["RIM_JOB_CONTROL_URL"] == "https://rim-control.internal:3111"
    error_message = "unexpected job environment"
  }

  assert {
    condition     = keys(output.systemd_units) == tolist(["rim-edge.service", "rim-job.service"])
    error_message = "both units are rendered"
  }

  assert {
    condition     = strcontains(output.systemd_units["rim-edge.service"], "ExecStart=/usr/local/bin/rim edge\n") && strcontains(output.systemd_units["rim-job.service"], "ExecStart=/usr/local/bin/rim job\n")
    error_message = "the units run rim edge and rim job"
  }

  assert {
    condition = [for file in yamldecode(trimprefix(output.user_data, "#cloud-config\n")).write_files : file.path] == [
      "/etc/rim/secrets.env",
      "/usr/local/lib/rim/host-env.sh",
      "/etc/rim/edge.env",
      "/etc/rim/job.env",
      "/etc/systemd/system/rim-edge.service",
      "/etc/systemd/system/rim-job.service",
    ]
    error_message = "unexpected files"
  }

  assert {
    condition = [for file in yamldecode(trimprefix(output.user_data, "#cloud-config\n")).write_files : file.content if file.path == "/etc/rim/secrets.env"] == [
      "RIM_CLUSTER_SECRET=s3cret\nRIM_JOB_DATABASE_URL=postgres://rim@db.internal/rim\n"
    ]
    error_message = "the secrets file holds the cluster secret and the database URL"
  }

  assert {
    condition = [for file in yamldecode(trimprefix(output.user_data, "#cloud-config\n")).write_files : "${file.owner} ${file.permissions}" if file.path == "/etc/rim/secrets.env"] == [
      "root:root 0600"
    ]
    error_message = "only root can read the secrets"
  }

  assert {
    condition = [for file in yamldecode(trimprefix(output.user_data, "#cloud-config\n")).write_files : file.content if file.path == "/etc/rim/edge.env"] == [
      "RIM_EDGE_CONTROL_URL=https://rim-control.internal:3111\nRIM_EDGE_LATITUDE=50.1109\nRIM_EDGE_LONGITUDE=8.6821\nRIM_EDGE_PUBLIC_HOSTNAME=fra-edge.example.com\nRIM_EDGE_REGION=fra\nRIM_LOG_FORMAT=json\n"
    ]
    error_message = "the edge environment file is sorted KEY=VALUE lines"
  }

  assert {
    condition = yamldecode(trimprefix(output.user_data, "#cloud-config\n")).runcmd == [
      ["sh", "-c", "curl -fsSL --retry 5 -o /tmp/rim 'https://releases.example.com/rim-x86_64-linux' && echo '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef  /tmp/rim' | sha256sum -c - && install -m 0755 /tmp/rim /usr/local/bin/rim"],
      ["sh", "/usr/local/lib/rim/host-env.sh"],
      ["systemctl", "daemon-reload"],
      ["systemctl", "enable", "--now", "rim-edge.service"],
      ["systemctl", "enable", "--now", "rim-job.service"],
    ]
    error_message = "unexpected boot commands"
  }

  assert {
    condition     = strcontains(yamldecode(trimprefix(output.user_data, "#cloud-config\n")).write_files[1].content, "RIM_EDGE_PUSH_URL=http://$(hostname -I | cut -d' ' -f1):3109")
    error_message = "the push URL is the private address"
  }
}

run "edge_only" {
  command = plan

  variables {
    roles            = ["edge"]
    job_database_url = ""
  }

  assert {
    condition     = keys(output.systemd_units) == tolist(["rim-edge.service"]) && length(output.job_environment) == 0
    error_message = "an edge-only machine runs no job worker"
  }

  assert {
    condition     = !strcontains(output.user_data, "RIM_JOB_DATABASE_URL")
    error_message = "an edge-only machine gets no database URL"
  }
}

run "rejects_unknown_roles" {
  command = plan

  variables {
    roles = ["edge", "control"]
  }

  expect_failures = [var.roles]
}

run "rejects_a_bad_checksum" {
  command = plan

  variables {
    rim_sha256 = "abc"
  }

  expect_failures = [var.rim_sha256]
}
