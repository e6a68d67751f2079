"""The session manager and its state stores: what makes `stateful=True` mean on the server what it means in Keras."""
