"""Integration tests against a real mosquitto (``@pytest.mark.integration``)."""
