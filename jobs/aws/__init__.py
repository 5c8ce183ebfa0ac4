"""Adapters to AWS: boto3 clients, the Glue catalog, Athena, EMR and the artifact a cluster runs."""
