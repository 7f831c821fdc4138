"""The DrVoice browser app (Gradio Blocks): voice chat, side-by-side comparison, preference capture.

Layers (DESIGN §1: thin callbacks, no torch math here):

- ``app/config.py``    limits and settings (frozen dataclasses), the admin-token variable;
- ``app/context.py``   what the callbacks share: loaded engines, the repository, cancel flags;
- ``app/turns.py``     one turn's life cycle: validate input, write the ``running`` row, run the
                       engine in a worker thread, store the result (done / cancelled / error);
- ``app/streaming.py`` turning engine events into chat messages, audio chunks and metrics;
- ``app/handlers.py``  Chat and Compare callbacks (generators feeding the page);
- ``app/api.py``       the named endpoints for ``gradio_client`` (chat, compare, vote, feedback);
- ``app/data_tab.py``  the Data tab: counts, recent turns, win rates, admin export / deletion;
- ``app/ui.py``        the Blocks layout and event wiring;
- ``app/cli.py``       command line (``python app.py --help``).
"""
