"""Hand-written fakes that speak the real wire protocols over loopback."""
