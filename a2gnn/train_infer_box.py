"""`python -m a2gnn.train_infer_box`: A2GNN pseudo labels from box seeds (train_infer_A2GNN_box.py)."""
from a2gnn import cli


def main(argv, flag_values=None):
    del argv
    cli.main('box', flag_values)


def run():
    from common.cli import run_app
    cli.define_flags('box')
    run_app(main)


if __name__ == '__main__':
    run()
