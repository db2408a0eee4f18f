"""Fine-tuning, tuning and benchmarking of the project's tasks on Ray Train."""
