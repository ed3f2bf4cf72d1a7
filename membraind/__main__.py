from membraind.cli import main

if __name__ == "__main__":  # a spawned engine process imports this module too
    raise SystemExit(main())
