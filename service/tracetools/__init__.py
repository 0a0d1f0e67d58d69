"""Making page-reference traces from outside sources (a program run under valgrind's lackey);
no Flask, Celery or database here, as in the engine."""
