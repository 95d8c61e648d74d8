"""Differential evolution, the Hops/Maggy one-liner: mutation is DE's F, crossover its CR.

    python examples/search_evolution.py

popsize 10 and 3 generations after the random initial one: 40 trials of the digits MLP.
"""

import escala
from escala.search import evolutionary_search, integer, loguniform, uniform


def train(config, reporter):
    summary = escala.train(
        epochs=3,
        hidden=(config["width"],),
        lr=config["lr"],
        dropout=config["dropout"],
        out=reporter.trial_dir,
        overwrite=True,
        progress="none",
        tensorboard=False,
    )
    return summary["val_acc"]


if __name__ == "__main__":
    space = {"lr": loguniform(0.001, 0.5), "dropout": uniform(0.0, 0.6), "width": integer(16, 256, log=True)}
    result = evolutionary_search(
        train,
        space,
        direction="max",
        popsize=10,
        generations=3,
        crossover=0.7,
        mutation=0.5,
        parallel=2,
        out="runs/search_de",
    )
    print(f"best val_acc {result['best_value']:.4f} with {result['best_config']}")
