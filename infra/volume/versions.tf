terraform {
  required_version = ">= 1.9"

  required_providers {
    openstack = {
      source = "terraform-provider-openstack/openstack"
      # Same constraint as the root module; exact release in infra/provider-version.
      version = "~> 3.0"
    }
  }
}

provider "openstack" {
  cloud = var.cloud
}
