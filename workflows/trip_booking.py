"""Trip booking, a saga: book a flight, a hotel and a car; if one fails for good, undo the rest.

There are no cars left in Lisbon, so a trip there books the flight and the
hotel, fails to rent the car, then cancels the hotel and the flight (newest
first), each cancellation once, however often the run replays or crashes.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from openworkflow import NonRetryableError, Step, workflow
from openworkflow.saga import Saga

CARS_AVAILABLE = {"Lisbon": 0, "Porto": 4}
"""The pretend car rental's fleet per city."""


class Trip(BaseModel):
    trip_id: str
    destination: str = "Lisbon"
    nights: int = Field(default=3, gt=0)


class NoCarsAvailable(NonRetryableError):
    """The rental has no car at the destination: retrying will not help."""


# The pretend services. Each booking has an id derived from the trip, so the
# effect of a step is the same whichever attempt or worker runs it.


def book_flight(trip: Trip) -> dict[str, str]:
    return {"booking_id": f"FL-{trip.trip_id}", "to": trip.destination}


def cancel_flight(flight: dict[str, str]) -> str:
    return f"canceled {flight['booking_id']}"


def book_hotel(trip: Trip) -> dict[str, object]:
    return {"booking_id": f"HT-{trip.trip_id}", "nights": trip.nights}


def cancel_hotel(hotel: dict[str, object]) -> str:
    return f"canceled {hotel['booking_id']}"


def rent_car(trip: Trip) -> dict[str, str]:
    if CARS_AVAILABLE.get(trip.destination, 0) == 0:
        raise NoCarsAvailable(f"no cars available in {trip.destination}")
    return {"booking_id": f"CR-{trip.trip_id}"}


def return_car(car: dict[str, str]) -> str:
    return f"canceled {car['booking_id']}"


@workflow(name="trip-booking", version="v1")
async def trip_booking(input: Trip, step: Step) -> dict[str, object]:
    saga = Saga(step)
    try:
        async with saga:
            flight = await saga.run("flight", book_flight, input, compensate=cancel_flight)
            hotel = await saga.run("hotel", book_hotel, input, compensate=cancel_hotel)
            car = await saga.run("car", rent_car, input, compensate=return_car)
    except NoCarsAvailable as error:
        # The saga undid the hotel and the flight before the error got here.
        return {"status": "compensated", "reason": str(error), "compensated": saga.compensated}
    return {"status": "booked", "flight": flight, "hotel": hotel, "car": car}
