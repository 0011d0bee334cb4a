"""What the API and the workers share: settings, registry, job schemas and store, storage."""
