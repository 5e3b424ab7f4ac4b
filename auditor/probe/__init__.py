"""Probe-a-student machinery: local fine-tuning, the OpenAI fine-tuning protocol, and the statistics."""
