"""The web page (`darkroom ui`): a Streamlit app built on the HTTP API like any other client.

It imports only darkroom.client, httpx and Streamlit: no Redis, torch or worker code,
so it runs anywhere the API can be reached.
"""
