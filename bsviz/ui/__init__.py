"""Front ends: the command line, the Gradio app, the notebook explorer, figures and galleries."""
