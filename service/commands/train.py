"""`train`: placeholder until its issue lands."""

from service.commands.common import not_implemented


def add_arguments(parser):
    pass


run = not_implemented("train")
