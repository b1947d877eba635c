"""Audio in and out: any file -> 44.1 kHz stereo chunks (decode) -> STFT magnitude clips (stft)."""
