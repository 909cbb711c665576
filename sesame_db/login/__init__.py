"""
Login by email: a form that sends a one-time link, and the views that use it.

``path("auth/", include("sesame_db.urls"))`` wires it up; see the
``login`` chapter of the documentation.

- :mod:`~sesame_db.login.forms`: the forms of the request and of the code;
- :mod:`~sesame_db.login.flow`: issue a link, throttle requests, revoke
  earlier links, check codes;
- :mod:`~sesame_db.login.emails`: render and send the email;
- :mod:`~sesame_db.login.browser`: the cookie that binds a link to the
  browser that asked for it;
- :mod:`~sesame_db.login.views`: the pages.

"""
