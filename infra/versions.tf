terraform {
  # 1.9: validations that refer to other variables; 1.7: mock_provider in `terraform test`.
  required_version = ">= 1.9"

  required_providers {
    openstack = {
      source = "terraform-provider-openstack/openstack"
      # 3.x: the floating IP goes through a port (3.0 removed the compute association).
      # The exact release used here is pinned in infra/provider-version (build-provider.sh).
      version = "~> 3.0"
    }
  }
}

# Credentials come from the named entry of clouds.yaml (Chameleon's application credential):
# nothing secret is written in the configuration or its state.
provider "openstack" {
  cloud = var.cloud
}
