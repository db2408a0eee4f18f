# The rendered inventory, for the two layouts: the shape Ansible reads (the BRIEF's contract).

variables {
  gateway_address      = "129.114.108.20"
  ssh_user             = "cc"
  ssh_private_key_file = "/repo/.stack/demo/secrets/ssh_key"
  known_hosts_file     = "/repo/.stack/demo/known_hosts"
}

run "kvm_two_gpu_workers" {
  command = plan

  variables {
    hosts = {
      demo-services = { private_address = "10.52.0.10", role = "services" }
      demo-gpu-1    = { private_address = "10.52.0.11", role = "worker" }
      demo-gpu-2    = { private_address = "10.52.0.12", role = "worker" }
    }
  }

  assert {
    condition     = keys(yamldecode(output.yaml).all.children.services.hosts) == ["demo-services"]
    error_message = "services must hold the services host only."
  }

  assert {
    condition     = keys(yamldecode(output.yaml).all.children.ray_head.hosts) == ["demo-services"]
    error_message = "ray_head must be the services host."
  }

  assert {
    condition     = keys(yamldecode(output.yaml).all.children.ray_workers.hosts) == ["demo-gpu-1", "demo-gpu-2"]
    error_message = "ray_workers must be the GPU hosts."
  }

  assert {
    condition     = yamldecode(output.yaml).all.children.services.hosts["demo-services"].ansible_host == "129.114.108.20"
    error_message = "The gateway is reached at its floating IP."
  }

  assert {
    condition     = yamldecode(output.yaml).all.children.services.hosts["demo-services"].stack_private_address == "10.52.0.10"
    error_message = "The gateway's stack_private_address is its private address."
  }

  assert {
    condition     = yamldecode(output.yaml).all.children.ray_workers.hosts["demo-gpu-2"].ansible_host == "10.52.0.12"
    error_message = "A worker is reached at its private address."
  }

  assert {
    condition = (yamldecode(output.yaml).all.children.ray_workers.hosts["demo-gpu-1"].ansible_ssh_common_args ==
    "-o ProxyCommand=\"ssh -W %h:%p -q -i /repo/.stack/demo/secrets/ssh_key -o UserKnownHostsFile=/repo/.stack/demo/known_hosts -o StrictHostKeyChecking=yes cc@129.114.108.20\" -o UserKnownHostsFile=/repo/.stack/demo/known_hosts -o StrictHostKeyChecking=yes")
    error_message = "A worker goes through the gateway, with the stack's key and pinned host keys on both hops."
  }

  assert {
    condition     = !strcontains(yamldecode(output.yaml).all.children.services.hosts["demo-services"].ansible_ssh_common_args, "ProxyCommand")
    error_message = "The gateway is reached directly."
  }

  assert {
    condition     = strcontains(yamldecode(output.yaml).all.children.services.hosts["demo-services"].ansible_ssh_common_args, "StrictHostKeyChecking=yes")
    error_message = "The gateway's host key is checked against the pinned file too."
  }

  assert {
    condition     = yamldecode(output.yaml).all.vars.ansible_user == "cc" && yamldecode(output.yaml).all.vars.ansible_ssh_private_key_file == "/repo/.stack/demo/secrets/ssh_key"
    error_message = "Every host logs in as the stack's user with the stack's key."
  }

  assert {
    condition     = yamldecode(output.yaml).all.vars.stack_private_addresses == ["10.52.0.10", "10.52.0.11", "10.52.0.12"]
    error_message = "The firewall's list holds every private address of the stack, and only those."
  }
}

run "baremetal_one_gpu_node" {
  command = plan

  variables {
    hosts = {
      demo-services = { private_address = "10.140.81.5", role = "services" }
      demo-gpu-1    = { private_address = "10.140.82.9", role = "worker" }
    }
  }

  assert {
    condition     = keys(yamldecode(output.yaml).all.children.ray_workers.hosts) == ["demo-gpu-1"]
    error_message = "ray_workers must be the one GPU node."
  }

  assert {
    condition     = strcontains(yamldecode(output.yaml).all.children.ray_workers.hosts["demo-gpu-1"].ansible_ssh_common_args, "cc@129.114.108.20")
    error_message = "The GPU node is reached through the gateway's floating IP."
  }

  assert {
    condition     = yamldecode(output.yaml).all.vars.stack_private_addresses == ["10.140.81.5", "10.140.82.9"]
    error_message = "The firewall's list holds both private addresses."
  }
}

run "two_services_hosts_are_refused" {
  command = plan

  variables {
    hosts = {
      a = { private_address = "10.52.0.10", role = "services" }
      b = { private_address = "10.52.0.11", role = "services" }
    }
  }

  expect_failures = [var.hosts]
}

run "unknown_role_is_refused" {
  command = plan

  variables {
    hosts = {
      a = { private_address = "10.52.0.10", role = "services" }
      b = { private_address = "10.52.0.11", role = "gpu" }
    }
  }

  expect_failures = [var.hosts]
}
