"""The streaming worker: Kafka frames in, detections to PostgreSQL and Kafka out."""
