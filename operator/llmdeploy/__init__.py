"""llmdeploy: size, render and scale LLM inference on Kubernetes."""
