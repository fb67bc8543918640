"""spiffe-broker: SPIFFE workload identity in, short-lived certificate-bound OAuth tokens out."""
