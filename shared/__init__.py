"""What the gateway and the workers share: settings, schemas, names, storage, the CSV schema, the stores."""
