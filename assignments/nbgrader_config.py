# nbgrader configuration of the course (run nbgrader from this folder; `make assignments` does).
c = get_config()  # noqa: F821  (provided by nbgrader when it loads this file)
c.CourseDirectory.course_id = "ntk-backdoor"
c.CourseDirectory.root = "."
# The jupytext sources (*.py) hold the solutions: never released.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.py"]
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.Execute.timeout = 300
