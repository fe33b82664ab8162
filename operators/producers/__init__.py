"""Kafka producers: video files, image folders and live streams into the wire format."""

from operators.producers.frame_producer import FrameProducer, ProduceReport

__all__ = ["FrameProducer", "ProduceReport"]
