# Renders the cloud-init configuration that installs `rim` and runs `rim edge` and/or `rim job` for
# one region under systemd. Only built-in functions are used, so the rendering is tested offline
# (tests/render.tftest.hcl).

locals {
  run_edge = contains(var.roles, "edge")
  run_job  = contains(var.roles, "job")

  edge_environment = merge({
    RIM_EDGE_REGION      = var.region.region
    RIM_EDGE_LATITUDE    = tostring(var.region.latitude)
    RIM_EDGE_LONGITUDE   = tostring(var.region.longitude)
    RIM_EDGE_CONTROL_URL = var.region.control_url
    RIM_LOG_FORMAT       = "json"
    }, var.public_hostname == "" ? {} : {
    RIM_EDGE_PUBLIC_HOSTNAME = var.public_hostname
  }, var.extra_edge_environment)

  job_environment = merge({
    RIM_JOB_REGION        = var.region.region
    RIM_JOB_CONTROL_URL   = var.region.control_url
    RIM_JOB_KAFKA_BROKERS = var.kafka_brokers
    RIM_JOB_TOPIC_PREFIX  = var.topic_prefix
    RIM_JOB_LISTEN        = "0.0.0.0:3121"
    RIM_LOG_FORMAT        = "json"
  }, var.extra_job_environment)

  # systemd EnvironmentFile lines; the secrets live in a separate file only root can read.
  edge_env_file = join("", [for key in sort(keys(local.edge_environment)) : "${key}=${local.edge_environment[key]}\n"])
  job_env_file  = join("", [for key in sort(keys(local.job_environment)) : "${key}=${local.job_environment[key]}\n"])
  secret_env_file = join("", concat(
    ["RIM_CLUSTER_SECRET=${var.cluster_secret}\n"],
    local.run_job ? ["RIM_JOB_DATABASE_URL=${var.job_database_url}\n"] : [],
  ))

  # Addresses only the booted machine knows, written before the edge starts.
  host_env_script = join("\n", concat(
    ["set -eu", ": > /etc/rim/edge-host.env"],
    var.public_address_command == "" ? [] : ["echo \"RIM_EDGE_PUBLIC_ADDRESSES=$(${var.public_address_command})\" >> /etc/rim/edge-host.env"],
    var.private_address_command == "" ? [] : ["echo \"RIM_EDGE_PUSH_URL=http://$(${var.private_address_command}):3109\" >> /etc/rim/edge-host.env"],
  ))

  units = merge(local.run_edge ? {
    "rim-edge.service" = <<-UNIT
      [Unit]
      Description=rim edge (region ${var.region.region})
      Wants=network-online.target
      After=network-online.target

      [Service]
      User=rim
      EnvironmentFile=/etc/rim/edge.env
      EnvironmentFile=-/etc/rim/edge-host.env
      EnvironmentFile=/etc/rim/secrets.env
      ExecStart=/usr/local/bin/rim edge
      Restart=always
      RestartSec=2
      LimitNOFILE=1048576
      # Draining on stop: rim edge reports itself draining and lets its connections go.
      TimeoutStopSec=60

      [Install]
      WantedBy=multi-user.target
    UNIT
    } : {}, local.run_job ? {
    "rim-job.service" = <<-UNIT
      [Unit]
      Description=rim job worker (region ${var.region.region})
      Wants=network-online.target
      After=network-online.target

      [Service]
      User=rim
      EnvironmentFile=/etc/rim/job.env
      EnvironmentFile=/etc/rim/secrets.env
      ExecStart=/usr/local/bin/rim job
      Restart=always
      RestartSec=2

      [Install]
      WantedBy=multi-user.target
    UNIT
  } : {})

  files = concat(
    [
      { path = "/etc/rim/secrets.env", permissions = "0600", owner = "root:root", content = local.secret_env_file },
      { path = "/usr/local/lib/rim/host-env.sh", permissions = "0755", owner = "root:root", content = "${local.host_env_script}\n" },
    ],
    local.run_edge ? [{ path = "/etc/rim/edge.env", permissions = "0644", owner = "root:root", content = local.edge_env_file }] : [],
    local.run_job ? [{ path = "/etc/rim/job.env", permissions = "0644", owner = "root:root", content = local.job_env_file }] : [],
    [for name in sort(keys(local.units)) : { path = "/etc/systemd/system/${name}", permissions = "0644", owner = "root:root", content = local.units[name] }],
  )

  cloud_config = {
    users = [{ name = "rim", system = true, shell = "/usr/sbin/nologin", homedir = "/var/lib/rim" }]
    # Every file is root's: systemd reads the environment files before it drops to the rim user,
    # so the processes never need to read the secrets themselves.
    write_files = local.files
    runcmd = concat(
      [
        ["sh", "-c", "curl -fsSL --retry 5 -o /tmp/rim '${var.rim_url}' && echo '${var.rim_sha256}  /tmp/rim' | sha256sum -c - && install -m 0755 /tmp/rim /usr/local/bin/rim"],
        ["sh", "/usr/local/lib/rim/host-env.sh"],
        ["systemctl", "daemon-reload"],
      ],
      [for name in sort(keys(local.units)) : ["systemctl", "enable", "--now", name]],
    )
  }
}

check "job_needs_a_database" {
  assert {
    condition     = !local.run_job || var.job_database_url != ""
    error_message = "job workers need job_database_url (RIM_JOB_DATABASE_URL)."
  }
}
