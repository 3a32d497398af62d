"""The loops pages (issue 6): domains with their live stacks, runs, agents; one module each,
gathered by loops/urls.py."""
