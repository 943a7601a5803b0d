"""Audio data: VGGSound DataModule, waveform front end, embedded procedural sound set."""
