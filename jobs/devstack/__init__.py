"""The local development stack: Kafka, moto and friends as real processes, and the end-to-end demo."""
