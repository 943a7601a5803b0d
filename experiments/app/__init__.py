"""The Gradio page (`make app`, `python -m experiments.app`): play a sound, watch a painting answer.

A thin layer over the edit entry points: `engine.EditEngine` loads the models once and calls the same functions
as `experiments.edit` with each request's settings; `page.build_page` lays out the Gradio Blocks.
"""
