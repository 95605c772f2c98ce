"""The manifest modes, --inject, --check and --webhook: their options, and the one line
and exit status 2 that bad input gets. Nothing here is imported when supervising."""

import sys

from kubexit.cli import usage_error
from kubexit.log import write_stderr

# The options each mode takes.
MODES = {
    "--inject": ("--image", "--python"),
    "--check": (),
    "--webhook": ("--cert", "--key", "--listen", "--image", "--python"),
}


def mode_arguments(mode, args):
    """({option: value}, [FILE]) for a manifest mode, or a usage error's message."""
    values, files, index = {}, [], 0
    while index < len(args):
        word = args[index]
        key, equals, value = word.partition("=")
        if word == "-" or not word.startswith("-"):
            files.append(word)
        elif key in MODES[mode]:
            if not equals:
                index += 1
                if index == len(args):
                    return "%s %s needs a value" % (mode, key)
                value = args[index]
            values[key] = value
        else:
            return "%s does not take %s" % (mode, word)
        index += 1
    if mode == "--webhook" and files:
        return "--webhook takes no FILE"
    if len(files) > 1:
        return "%s takes at most one FILE" % mode
    return values, files


def run_mode(mode, args):
    parsed = mode_arguments(mode, args)
    if isinstance(parsed, str):
        return usage_error(parsed)
    values, files = parsed
    from kubexit.manifests import ManifestError

    try:
        if mode == "--webhook":
            from kubexit.webhook import serve

            return serve(values)
        from kubexit import manifests

        source, text = manifests.read_source(files[0] if files else None)
        documents = manifests.parse_documents(source, text)
        if mode == "--inject":
            from kubexit.inject import Options, inject_documents

            options = Options(values.get("--image"), values.get("--python"))
            inject_documents(documents, source, options,
                             lambda text: write_stderr("kubexit --inject: warning: " + text))
            manifests.write_documents(documents, sys.stdout)
            return 0
        from kubexit.check import check_documents

        count, problems = check_documents(documents, source)
        for problem in problems:
            sys.stdout.write(problem + "\n")
        write_stderr("kubexit --check: %d pod template%s, %s" % (
            count, "" if count == 1 else "s",
            "%d problem%s" % (len(problems), "" if len(problems) == 1 else "s") if problems
            else "no problems"))
        return 1 if problems else 0
    except ManifestError as err:
        write_stderr("kubexit %s: %s" % (mode, err))
        return 2
