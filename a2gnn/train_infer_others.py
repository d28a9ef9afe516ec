"""`python -m a2gnn.train_infer_others`: A2GNN pseudo labels from image-level, point or scribble seeds (train_infer_A2GNN_others.py)."""
from a2gnn import cli


def main(argv, flag_values=None):
    del argv
    cli.main('others', flag_values)


def run():
    from common.cli import run_app
    cli.define_flags('others')
    run_app(main)


if __name__ == '__main__':
    run()
