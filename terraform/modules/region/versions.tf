terraform {
  required_version = ">= 1.6"

  required_providers {
    rim = {
      source = "rim/rim"
    }
  }
}
