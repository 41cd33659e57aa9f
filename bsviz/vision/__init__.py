"""Images and faces: the one image gate, MediaPipe face finding and its scores, video frames."""
