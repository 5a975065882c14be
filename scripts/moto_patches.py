"""Small patches that hold moto to AWS rules the tool depends on (DESIGN.md §5).

Each patch is a function registered in PATCHES, with a comment naming the AWS rule it adds and
the reason the tests need it. The tool never special-cases the emulator; the emulator is made
to behave like AWS here instead.
"""

PATCHES = []


def patch(fn):
    PATCHES.append(fn)
    return fn


def apply():
    for fn in PATCHES:
        fn()
