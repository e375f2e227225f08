"""Write a runnable nginx config from the repository's nginx.conf template.

    python scripts/nginx_conf.py LISTEN UPSTREAM RUN_DIR
    python scripts/nginx_conf.py 127.0.0.1:5000 127.0.0.1:5001 instance/nginx

It fills in the listen address, gunicorn's address and the folder for nginx's pid and temporary
files (created here), writes RUN_DIR/nginx.conf, and prints its path.
"""

import getpass
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def render(listen, upstream, run_dir):
    """Return the path of a config that serves `listen` from gunicorn at `upstream`."""
    run_dir = os.path.abspath(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(ROOT, "nginx.conf"), encoding="utf-8") as template:
        text = template.read()
    # nginx's workers run as whoever started it, so they can use what it created
    values = {"USER": getpass.getuser(), "LISTEN": listen, "UPSTREAM": upstream, "RUN_DIR": run_dir}
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    path = os.path.join(run_dir, "nginx.conf")
    with open(path, "w", encoding="utf-8") as conf:
        conf.write(text)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    print(render(*sys.argv[1:]))
