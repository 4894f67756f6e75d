"""Booking confirmations (``booking.confirmed``): the client is told, staff hear of urgent ones."""
