terraform {
  # Provider-free: renders text only, so it can be initialised and tested anywhere.
  required_version = ">= 1.9"
}
