"""Project workspaces: specs, data grants, Kubernetes manifests, delivery."""
