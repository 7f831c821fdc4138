"""DrVoice browser app: ``python app.py [--checkpoint DIR_OR_HUB_ID] [--port 7860]`` (see --help)."""

from app.cli import main

if __name__ == "__main__":
    main()
