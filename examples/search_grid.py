"""Grid search, the Hops/Maggy way: a trial function and a dict whose lists are the grid.

    python examples/search_grid.py

Each trial trains the digits MLP with escala for a few epochs and reports validation accuracy per
epoch; the 6 grid points run 2 at a time in local processes. Results: runs/search_grid/.
"""

import escala
from escala.search import launch


def train(config, reporter):
    summary = escala.train(
        epochs=3,
        hidden=(64,),
        lr=config["lr"],
        dropout=config["dropout"],
        out=reporter.trial_dir,
        overwrite=True,
        progress="none",
        tensorboard=False,
    )
    reporter.report(3, val_acc=summary["val_acc"])
    return summary["val_acc"]


if __name__ == "__main__":  # trials run in other processes, which import this file
    result = launch(
        train, {"lr": [0.001, 0.005, 0.01], "dropout": [0.5, 0.6]}, parallel=2, out="runs/search_grid"
    )
    print(f"best val_acc {result['best_value']:.4f} with {result['best_config']}")
