from qbench.cli.main import main

if __name__ == "__main__":  # guard: data generation starts worker processes with "spawn"
    main()
